// Package config loads the gateway configuration into a typed Config.
//
// It is the only package that imports viper; everything else receives a
// Config by value and never reads files or the environment itself.
//
// # Mapping onto the packages
//
// The gateway and each backend own a Config of their own whose zero value
// works (0 means the default there, a negative count means none). This
// package alone maps the keys onto them (map.go: Gateway, Memory,
// NATSBroker, JetStream, RedisBroker, RedisStream), translating the keys
// whose 0 means "none" or "no cap", so one key has one meaning everywhere
// (TestGatewayDefaults, TestZeroMeansNone).
//
// # Sources and precedence
//
// Each key is resolved from, lowest precedence first:
//
//  1. the built-in default (Default);
//  2. the YAML file passed to Load, if any (config.yaml at the repository
//     root lists every key with its default);
//  3. the environment variable SYNCGATE_<KEY>, the key upper-cased with dots
//     as underscores: history.ttl is SYNCGATE_HISTORY_TTL,
//     presence.join_leave is SYNCGATE_PRESENCE_JOIN_LEAVE. An empty variable
//     counts as unset.
//
// # Strictness
//
// A key in the file that the Config does not have, and a SYNCGATE_* variable
// that names no key, are errors, so a typo cannot silently leave a default in
// place. Every value is parsed by this package, not by a generic decoder, so
// an error names the key, where the value came from and the form it must
// take:
//
//	config: history.ttl (env SYNCGATE_HISTORY_TTL): want a Go duration like "10m" or "6s", got "ten"
//
// Durations are Go durations ("500ms", "10s", "10m"); a bare number is not
// accepted as a duration. Whole numbers may be written as YAML numbers or as
// decimal strings. All problems found are reported together (errors.Join).
//
// # Adding a key
//
// Add the field to Config, its default to Default, one row to the settings
// table, and the key with its comment to config.yaml; the tests fail until
// all four agree. A key the gateway or a backend reads is also mapped onto
// its Config in map.go.
//
// Load, LoadFrom and Validate keep no shared state and are safe to call from
// several goroutines.
package config
