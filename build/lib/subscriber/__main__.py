from subscriber.app import main

main()
