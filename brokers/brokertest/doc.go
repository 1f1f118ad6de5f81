// Package brokertest is the conformance suite every broker backend runs,
// and the Recorder handler its tests use.
//
// A backend's test calls Run (or Suite.Run) with the Features it declares
// and a function returning a fresh, not yet started broker:
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, brokertest.Features{
//			History: true, HistorySize: 100, Epoch: true, Presence: true, Pinger: true,
//		}, func(t *testing.T) brokers.Broker {
//			return memory.New(memory.Config{HistorySize: 100})
//		})
//	}
//
// The suite runs one subtest per guarantee of the brokers contract (delivery,
// ordering, history, catch-up without gap, presence and its expiry, Close)
// for the declared features only, and checks that the declared optional
// interfaces are exactly the implemented ones. A backend with several nodes
// on one server also sets Suite.NewPair to run the cross-node checks.
//
// # Lifecycle
//
// Each subtest makes its own brokers, starts them with a Recorder and, in a
// t.Cleanup, closes them, checks the Recorder for contract violations and
// checks with goleak that no goroutine started since is still running.
// Subtests run one after the other; channel names are unique per call, so
// brokers sharing one server do not see each other's channels.
//
// # Goroutine safety and buffers
//
// A Recorder may be called concurrently, as a Handler is. It copies the Data
// it is given (which is valid only during the call) and returns snapshots:
// slices it returns must not be modified. Its Wait methods and the package's
// helpers that take a testing.TB must run on the test goroutine.
package brokertest
