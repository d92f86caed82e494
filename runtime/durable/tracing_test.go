package durable

import "testing"

func TestTemplate(t *testing.T) {
	for subject, want := range map[string]string{
		"ORDER.o-1.created":    "ORDER.*.created",
		"ORDER.17.o-1.created": "ORDER.*.*.created",
		"DEADLETTER.reserve":   "DEADLETTER.reserve",
		"plain":                "plain",
	} {
		if got := template(subject); got != want {
			t.Errorf("template(%q) = %q, want %q", subject, got, want)
		}
	}
}
