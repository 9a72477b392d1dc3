pytest_plugins = ["cbs.testing", "cbs_process"]
