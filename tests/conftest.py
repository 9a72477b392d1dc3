pytest_plugins = ["cbs_process"]
