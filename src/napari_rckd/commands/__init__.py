"""One module per `napari-rckd` subcommand: `add_arguments(parser)` and `run(args)`."""
