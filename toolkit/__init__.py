"""Library code behind the command-line scripts: file formats, metrics, training, plots."""

__version__ = "0.13.0"  # the project's version, recorded in what its commands write (feature manifests, ...)
