module statestore.example/go-publisher

go 1.22
