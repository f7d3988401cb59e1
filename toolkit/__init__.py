"""Library code behind the command-line scripts: file formats, metrics, training, plots."""
