//! eBPF usage probes: the C programs and their loader land with the eBPF issue.
