package registry

import (
	"strings"
)

// challenge is one authentication challenge of a WWW-Authenticate header.
type challenge struct {
	// scheme is lower-case: "basic", "bearer", …
	scheme string
	// params are keyed by lower-case name; values are unquoted.
	params map[string]string
}

// parseChallenges parses the WWW-Authenticate header values of a response.
// A value may hold several challenges (RFC 9110 §11.6.1):
//
//	Basic realm="x", Bearer realm="https://auth/token",service="reg",scope="repository:a:pull"
//
// Parameter values are tokens or quoted strings with backslash escapes.
// Unparsable bytes are skipped rather than failing the whole header.
func parseChallenges(values []string) []challenge {
	var out []challenge
	for _, v := range values {
		out = append(out, parseChallengeHeader(v)...)
	}
	return out
}

func parseChallengeHeader(s string) []challenge {
	var out []challenge
	for i := 0; i < len(s); {
		i = skipSpace(s, i, true)
		if i >= len(s) {
			break
		}
		tok, j := readToken(s, i)
		if tok == "" {
			i++ // not a token character: skip it
			continue
		}
		k := skipSpace(s, j, false)
		if k < len(s) && s[k] == '=' && len(out) > 0 {
			k = skipSpace(s, k+1, false)
			var val string
			if k < len(s) && s[k] == '"' {
				val, k = readQuoted(s, k)
			} else {
				val, k = readToken(s, k)
			}
			name := strings.ToLower(tok)
			params := out[len(out)-1].params
			if _, dup := params[name]; !dup {
				params[name] = val
			}
			i = k
			continue
		}
		out = append(out, challenge{scheme: strings.ToLower(tok), params: map[string]string{}})
		i = j
	}
	return out
}

func skipSpace(s string, i int, commas bool) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || (commas && s[i] == ',')) {
		i++
	}
	return i
}

// readToken reads an RFC 9110 token starting at i.
func readToken(s string, i int) (string, int) {
	j := i
	for j < len(s) && isTokenChar(s[j]) {
		j++
	}
	return s[i:j], j
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~/:", c) >= 0
}

// readQuoted reads the quoted string starting at s[i] == '"'. An
// unterminated string runs to the end of s.
func readQuoted(s string, i int) (string, int) {
	var b strings.Builder
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			if j+1 < len(s) {
				j++
				b.WriteByte(s[j])
			}
		case '"':
			return b.String(), j + 1
		default:
			b.WriteByte(s[j])
		}
	}
	return b.String(), len(s)
}

// pickChallenge chooses the challenge to answer: a Bearer challenge with a
// realm first (what Docker does), then Basic.
func pickChallenge(chs []challenge) (challenge, bool) {
	for _, c := range chs {
		if c.scheme == "bearer" && c.params["realm"] != "" {
			return c, true
		}
	}
	for _, c := range chs {
		if c.scheme == "basic" {
			return c, true
		}
	}
	return challenge{}, false
}
