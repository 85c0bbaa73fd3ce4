from statestore.cli.main import run

run()
