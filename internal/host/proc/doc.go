// Package proc attributes sockets to processes from /proc and, when netlink
// SOCK_DIAG is refused, enumerates sockets from /proc/net.
//
// Attribution ([Scan]) is the costly half of a host snapshot: `ss -p`
// spends 5–8 s at 50,000 sockets because it opens, lists and readlinks
// every descriptor of every process with per-entry allocations. Scan does
// the same walk with one directory fd per process, getdents64 and
// readlinkat into buffers each worker reuses, parses "socket:[N]" in place,
// and spreads processes over GOMAXPROCS workers; the only allocations that
// grow with the number of descriptors are the results.
//
// We deliberately do not use github.com/prometheus/procfs on this path
// although DESIGN.md lists it for /proc: it allocates per descriptor (a
// string per name and per link target) and hides its parsers behind file
// I/O, while we need the hot loop allocation-free and every parser of
// process-controlled bytes (comm, cmdline, /proc/net lines, /etc/passwd) to
// be our own pure function that the fuzzers can reach.
//
// Strings are kept as the raw bytes the kernel gave (comm, cmdline, exe
// with its " (deleted)" suffix): they may be invalid UTF-8 or hold terminal
// controls, and escaping them is the output layer's job.
//
// Privileges: reading another user's /proc/PID/fd needs both
// CAP_DAC_READ_SEARCH (to list the directory) and CAP_SYS_PTRACE (to
// readlink its entries; ptrace-read access), in practice root. Processes
// that could not be read are counted in [Table.Denied], not reported one
// by one. With /proc mounted hidepid=2 they are not even listed, and so not
// counted.
package proc
