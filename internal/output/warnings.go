package output

import "io"

// WriteWarnings writes each warning on its own line, prefixed
// "tcpsentry: warning: ". Warnings quote paths and names from the host,
// so each is sanitised: a newline in one cannot start a fake line. Write
// errors are ignored, as nothing useful can be done when stderr fails.
func WriteWarnings(w io.Writer, warnings []string) {
	if len(warnings) == 0 {
		return
	}
	var b []byte
	for _, m := range warnings {
		b = append(b, "tcpsentry: warning: "...)
		b = appendSanitized(b, m)
		b = append(b, '\n')
	}
	_, _ = w.Write(b)
}
