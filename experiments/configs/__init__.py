"""Study configs: ``experiments/configs/<study>.py`` defines ``get_config(arg)`` (see base)."""
