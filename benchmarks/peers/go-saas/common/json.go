package common

import (
	"sort"
	"strconv"
	"strings"
)

// Field is one member of a JSON object: a string or an int64 value.
type Field struct {
	Key string
	Str string
	Int int64
	Num bool // Int, not Str
}

// S and I make fields.
func S(k, v string) Field       { return Field{Key: k, Str: v} }
func I(k string, v int64) Field { return Field{Key: k, Int: v, Num: true} }

// Object is the text nlohmann::json::dump() gives for an object of these fields: members in
// key order (nlohmann's object is a std::map), no spaces, strings escaped as dump() does
// without ensure_ascii (UTF-8 as is; only '"', '\\' and control characters escaped).
func Object(fields ...Field) string {
	sort.Slice(fields, func(i, j int) bool { return fields[i].Key < fields[j].Key })
	var b strings.Builder
	b.WriteByte('{')
	for i, f := range fields {
		if i > 0 {
			b.WriteByte(',')
		}
		writeString(&b, f.Key)
		b.WriteByte(':')
		if f.Num {
			b.WriteString(strconv.FormatInt(f.Int, 10))
		} else {
			writeString(&b, f.Str)
		}
	}
	b.WriteByte('}')
	return b.String()
}

func writeString(b *strings.Builder, s string) {
	const hex = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if c < 0x20 {
				b.WriteString(`\u00`)
				b.WriteByte(hex[c>>4])
				b.WriteByte(hex[c&15])
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
}
