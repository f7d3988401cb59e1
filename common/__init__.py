"""What every package of the project may use: errors, logging, devices, seeds, the project's version."""

__version__ = "0.13.0"  # the project's version, recorded in what its commands write (feature manifests, runs)
