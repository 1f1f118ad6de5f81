package natsname

import "testing"

func TestToken(t *testing.T) {
	seen := map[string]string{}
	for _, s := range []string{"", "a", "b", "a.b", "a~2Eb", "a~2eb", "~", "*", ">", "a b", "doc:1", "x=y@z", "a..b", ".", "~~", "\xff"} {
		tok := Token(s)
		if prev, dup := seen[tok]; dup {
			t.Errorf("Token(%q) = Token(%q) = %q", s, prev, tok)
		}
		seen[tok] = s
		if tok == "" || tok == "*" || tok == ">" {
			t.Errorf("Token(%q) = %q: not a literal token", s, tok)
		}
		for i := 0; i < len(tok); i++ {
			if c := tok[i]; c == '.' || c == ' ' || c == '\t' {
				t.Errorf("Token(%q) = %q contains %q", s, tok, c)
			}
		}
		if back, ok := ParseToken(tok); !ok || back != s {
			t.Errorf("ParseToken(Token(%q) = %q) = %q, %v", s, tok, back, ok)
		}
		if got := string(AppendToken(nil, s)); got != tok {
			t.Errorf("AppendToken(%q) = %q, Token gives %q", s, got, tok)
		}
	}
	for _, bad := range []string{"", "a.b", "~2e", "~4", "~41", "a*"} {
		if s, ok := ParseToken(bad); ok {
			t.Errorf("ParseToken(%q) = %q, ok; want not ok", bad, s)
		}
	}
}

func FuzzToken(f *testing.F) {
	for _, s := range []string{"", "a.b", "doc:1", "~", "a~2Eb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok := Token(s)
		if back, ok := ParseToken(tok); !ok || back != s {
			t.Fatalf("ParseToken(Token(%q) = %q) = %q, %v", s, tok, back, ok)
		}
		if back, ok := ParseToken(s); ok && Token(back) != s {
			t.Fatalf("Token(ParseToken(%q) = %q) = %q", s, back, Token(back))
		}
	})
}
