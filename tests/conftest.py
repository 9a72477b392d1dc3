pytest_plugins = ["cbs.testing"]
