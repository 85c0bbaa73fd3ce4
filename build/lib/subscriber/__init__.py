"""The statestore subscriber: a Dapr app that applies state events in order, exactly once in effect."""
