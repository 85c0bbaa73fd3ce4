// Command daprd is the Dapr runtime with only the components statestore uses.
//
// Upstream daprd registers its components in github.com/dapr/dapr/cmd/daprd/components
// behind the build tags allcomponents/stablecomponents, which pull in every cloud SDK.
// We build with neither tag and register our own short list here, against
// a copy of the dapr module whose no-tag file (which only panics) is emptied.
package main

import (
	"github.com/dapr/components-contrib/bindings/localstorage"
	nrsqlite "github.com/dapr/components-contrib/nameresolution/sqlite"
	"github.com/dapr/components-contrib/pubsub/redis"
	"github.com/dapr/components-contrib/secretstores/local/file"
	pgv1 "github.com/dapr/components-contrib/state/postgresql/v1"
	pgv2 "github.com/dapr/components-contrib/state/postgresql/v2"
	statesqlite "github.com/dapr/components-contrib/state/sqlite"
	"github.com/dapr/dapr/cmd/daprd/app"
	"github.com/dapr/dapr/pkg/components"
	bindingsLoader "github.com/dapr/dapr/pkg/components/bindings"
	nrLoader "github.com/dapr/dapr/pkg/components/nameresolution"
	pubsubLoader "github.com/dapr/dapr/pkg/components/pubsub"
	secretstoresLoader "github.com/dapr/dapr/pkg/components/secretstores"
	stateLoader "github.com/dapr/dapr/pkg/components/state"
)

func registerComponents() {
	stateLoader.DefaultRegistry.RegisterComponent(statesqlite.NewSQLiteStateStore, "sqlite", "sqlite3")
	postgres := components.Versioning{
		Preferred: components.VersionConstructor{Version: "v2", Constructor: pgv2.NewPostgreSQLStateStore},
		Others:    []components.VersionConstructor{{Version: "v1", Constructor: pgv1.NewPostgreSQLStateStore}},
		Default:   "v1",
	}
	stateLoader.DefaultRegistry.RegisterComponentWithVersions("postgresql", postgres)
	stateLoader.DefaultRegistry.RegisterComponentWithVersions("postgres", postgres)
	pubsubLoader.DefaultRegistry.RegisterComponent(redis.NewRedisStreams, "redis")
	bindingsLoader.DefaultRegistry.RegisterOutputBinding(localstorage.NewLocalStorage, "localstorage")
	secretstoresLoader.DefaultRegistry.RegisterComponent(file.NewLocalSecretStore, "local.file")
	nrLoader.DefaultRegistry.RegisterComponent(nrsqlite.NewResolver, "sqlite")
}

func main() {
	registerComponents()
	app.Run()
}
