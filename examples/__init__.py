"""Example apps that use statestore."""
