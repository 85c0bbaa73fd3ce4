// Command daprd is the Dapr runtime with only the components statestore uses.
//
// Upstream daprd registers its components in github.com/dapr/dapr/cmd/daprd/components
// behind the build tags allcomponents/stablecomponents, which pull in every cloud SDK.
// We build with neither tag and register our own short list here, against
// a copy of the dapr module whose no-tag file (which only panics) is emptied.
package main

import (
	"os"
	"strings"

	"github.com/dapr/components-contrib/bindings/aws/s3"
	"github.com/dapr/components-contrib/bindings/localstorage"
	nrsqlite "github.com/dapr/components-contrib/nameresolution/sqlite"
	"github.com/dapr/components-contrib/pubsub/kafka"
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
	pubsubLoader.DefaultRegistry.RegisterComponent(kafka.NewKafka, "kafka")
	bindingsLoader.DefaultRegistry.RegisterOutputBinding(localstorage.NewLocalStorage, "localstorage")
	bindingsLoader.DefaultRegistry.RegisterOutputBinding(s3.NewAWSS3, "aws.s3")
	secretstoresLoader.DefaultRegistry.RegisterComponent(file.NewLocalSecretStore, "local.file")
	nrLoader.DefaultRegistry.RegisterComponent(nrsqlite.NewResolver, "sqlite")
}

// loopbackFlags listen on every interface by default upstream; ours default to
// 127.0.0.1, also when the Dapr CLI (which cannot set all of them) starts daprd.
var loopbackFlags = []string{
	"dapr-listen-addresses",
	"dapr-internal-grpc-listen-address",
	"dapr-public-listen-address",
	"metrics-listen-address",
}

func withLoopbackDefaults(args []string) []string {
	out := []string{args[0]}
	for _, name := range loopbackFlags {
		if !hasFlag(args[1:], name) {
			out = append(out, "--"+name+"=127.0.0.1")
		}
	}
	return append(out, args[1:]...)
}

func hasFlag(args []string, name string) bool {
	for _, arg := range args {
		arg = strings.TrimLeft(arg, "-")
		if arg == name || strings.HasPrefix(arg, name+"=") {
			return true
		}
	}
	return false
}

func main() {
	os.Args = withLoopbackDefaults(os.Args)
	registerComponents()
	app.Run()
}
