package gateway

import (
	"context"
	"log/slog"
)

// VerifyTokenForTest runs the token verifier on an HS256 configuration.
func VerifyTokenForTest(secret, token string) bool {
	a, err := newAuthenticator(AuthConfig{HMACSecret: secret, ChannelsClaim: "channels"}, slog.New(slog.DiscardHandler))
	if err != nil {
		panic(err)
	}
	_, err = a.verify(context.Background(), token)
	return err == nil
}
