// Package codec decodes request bodies and encodes replies in the encoding the
// caller used: JSON with proto field names when the body starts with '{' or
// the Content-Type says so, binary protobuf otherwise.
package codec

import (
	"bytes"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/orderflow/orderflow/runtime/function"
)

// Encoding is the wire form of a body.
type Encoding int

const (
	// Protobuf is the binary protobuf wire format.
	Protobuf Encoding = iota
	// JSON is protojson with proto field names.
	JSON
)

func (e Encoding) String() string {
	if e == JSON {
		return "json"
	}
	return "protobuf"
}

// ContentType is the header value a reply in e carries.
func (e Encoding) ContentType() string {
	if e == JSON {
		return "application/json"
	}
	return "application/protobuf"
}

// Detect picks the encoding of a body: JSON when contentType says so or the
// first non-space byte is '{'.
func Detect(contentType string, body []byte) Encoding {
	if ct, _, _ := strings.Cut(contentType, ";"); strings.EqualFold(strings.TrimSpace(ct), "application/json") {
		return JSON
	}
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) > 0 && t[0] == '{' {
		return JSON
	}
	return Protobuf
}

var (
	jsonIn  = protojson.UnmarshalOptions{}
	jsonOut = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
	binIn   = proto.UnmarshalOptions{}
	binOut  = proto.MarshalOptions{}
)

// Decode fills msg from body. Unknown JSON fields and malformed bodies are
// bad input: the error wraps function.ErrInvalid and names the field where
// the decoder can tell.
func Decode(enc Encoding, body []byte, msg proto.Message) error {
	var err error
	if enc == JSON {
		err = jsonIn.Unmarshal(body, msg)
	} else {
		err = binIn.Unmarshal(body, msg)
	}
	if err != nil {
		d := msg.ProtoReflect().Descriptor()
		if enc != JSON && looksLikeText(body) {
			return function.Invalid("body", "neither JSON (a JSON body must be an object, starting with '{') nor protobuf (%s): %s",
				d.Name(), protoNames(d, trimProtoPrefix(err.Error())))
		}
		return function.Invalid("body", "cannot decode %s %s: %s", enc, d.Name(), protoNames(d, trimProtoPrefix(err.Error())))
	}
	return nil
}

// looksLikeText reports a body a person typed: printable UTF-8, which a
// protobuf message rarely is.
func looksLikeText(body []byte) bool {
	if len(body) == 0 || !utf8.Valid(body) {
		return false
	}
	for _, r := range string(body) {
		if !unicode.IsPrint(r) && !unicode.IsSpace(r) {
			return false
		}
	}
	return true
}

// HeaderLimit bounds a request's headers, name and values together, as
// the body is bounded: a caller cannot make a pod hold megabytes in them.
const HeaderLimit = 16 << 10

// LimitHeaders reports bad input when h exceeds HeaderLimit bytes.
func LimitHeaders(h map[string][]string) error {
	n := 0
	for k, vs := range h {
		n += len(k)
		for _, v := range vs {
			n += len(v)
		}
	}
	if n > HeaderLimit {
		return function.Invalid("headers", "%d bytes exceed the limit of %d", n, HeaderLimit)
	}
	return nil
}

// Encode renders msg in enc. JSON shows zero values, so "reserved": 0 is
// visible to a person reading a reply.
func Encode(enc Encoding, msg proto.Message) ([]byte, error) {
	if enc == JSON {
		return jsonOut.Marshal(msg)
	}
	return binOut.Marshal(msg)
}

// Limit reports bad input when body exceeds max bytes (max <= 0: no limit).
func Limit(body []byte, max int) error {
	if max > 0 && len(body) > max {
		return function.Invalid("body", "%d bytes exceeds the limit of %d", len(body), max)
	}
	return nil
}

// protoNames rewrites the lowerCamel JSON names protojson puts in its errors
// ("field unitPriceMinor") to the snake_case names callers send.
func protoNames(d protoreflect.MessageDescriptor, msg string) string {
	names, ok := jsonNames.Load(d.FullName())
	if !ok {
		pairs := []string{}
		seen := map[protoreflect.FullName]bool{}
		var walk func(protoreflect.MessageDescriptor)
		walk = func(m protoreflect.MessageDescriptor) {
			if seen[m.FullName()] {
				return
			}
			seen[m.FullName()] = true
			for i := 0; i < m.Fields().Len(); i++ {
				f := m.Fields().Get(i)
				if f.JSONName() != string(f.Name()) {
					pairs = append(pairs, "field "+f.JSONName(), "field "+string(f.Name()))
				}
				if f.Message() != nil {
					walk(f.Message())
				}
			}
		}
		walk(d)
		names, _ = jsonNames.LoadOrStore(d.FullName(), strings.NewReplacer(pairs...))
	}
	return names.(*strings.Replacer).Replace(msg)
}

var jsonNames sync.Map // protoreflect.FullName -> *strings.Replacer

// protobuf errors start with "proto: " (with a non-breaking space in some
// versions, to discourage matching); drop it so the description reads well.
func trimProtoPrefix(s string) string {
	for _, p := range []string{"proto:\u00a0", "proto: "} {
		if rest, ok := strings.CutPrefix(s, p); ok {
			return rest
		}
	}
	return s
}
