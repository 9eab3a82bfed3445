"""One module per ``bgfs`` sub-command (see ``bgfs_core.cli``)."""
