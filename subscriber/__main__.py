from statestore.subscriber.app import main

main()
