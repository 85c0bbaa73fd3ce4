from statestore_cli.main import run

run()
