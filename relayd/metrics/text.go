package metrics

import (
	"math"
	"strconv"
)

// Metric types, as the TYPE line spells them.
const (
	counterType = "counter"
	gaugeType   = "gauge"
	summaryType = "summary"
)

// family is one metric family: its name, HELP text, TYPE and label names.
type family struct {
	name, help, typ string
	labels          []string // label names; a sample gives the values in this order
}

// textWriter appends samples in the Prometheus text exposition format
// (version 0.0.4) to buf. It writes a family's HELP and TYPE lines before
// the family's first sample, so a family with no samples leaves no trace.
// The format wants a family's samples together: callers write one family
// at a time.
type textWriter struct {
	buf  []byte
	last *family // the family whose header was written last
}

// uint writes one sample of f; labelValues pair with f.labels.
func (w *textWriter) uint(f *family, v uint64, labelValues ...string) {
	w.begin(f, "", labelValues)
	w.buf = strconv.AppendUint(w.buf, v, 10)
	w.buf = append(w.buf, '\n')
}

// float writes one sample of f; labelValues pair with f.labels.
func (w *textWriter) float(f *family, v float64, labelValues ...string) {
	w.floatSuffix(f, "", v, labelValues...)
}

// floatSuffix writes a sample named f.name+suffix, as a summary's _sum and
// _count are.
func (w *textWriter) floatSuffix(f *family, suffix string, v float64, labelValues ...string) {
	w.begin(f, suffix, labelValues)
	switch {
	case math.IsNaN(v):
		w.buf = append(w.buf, "NaN"...)
	case math.IsInf(v, 1):
		w.buf = append(w.buf, "+Inf"...)
	case math.IsInf(v, -1):
		w.buf = append(w.buf, "-Inf"...)
	default:
		w.buf = strconv.AppendFloat(w.buf, v, 'g', -1, 64)
	}
	w.buf = append(w.buf, '\n')
}

// begin writes f's header if f is a new family, then the sample's name and
// labels and the space before its value.
func (w *textWriter) begin(f *family, suffix string, labelValues []string) {
	if w.last != f {
		w.last = f
		w.buf = append(w.buf, "# HELP "...)
		w.buf = append(w.buf, f.name...)
		w.buf = append(w.buf, ' ')
		w.buf = appendEscaped(w.buf, f.help, false)
		w.buf = append(w.buf, "\n# TYPE "...)
		w.buf = append(w.buf, f.name...)
		w.buf = append(w.buf, ' ')
		w.buf = append(w.buf, f.typ...)
		w.buf = append(w.buf, '\n')
	}
	w.buf = append(w.buf, f.name...)
	w.buf = append(w.buf, suffix...)
	if len(labelValues) > 0 {
		w.buf = append(w.buf, '{')
		for i, v := range labelValues {
			if i > 0 {
				w.buf = append(w.buf, ',')
			}
			w.buf = append(w.buf, f.labels[i]...)
			w.buf = append(w.buf, `="`...)
			w.buf = appendEscaped(w.buf, v, true)
			w.buf = append(w.buf, '"')
		}
		w.buf = append(w.buf, '}')
	}
	w.buf = append(w.buf, ' ')
}

// appendEscaped appends s with backslash and newline escaped, and double
// quotes too in a label value, as the text format requires.
func appendEscaped(b []byte, s string, quote bool) []byte {
	for i := range len(s) {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, `\\`...)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '"' && quote:
			b = append(b, `\"`...)
		default:
			b = append(b, c)
		}
	}
	return b
}
