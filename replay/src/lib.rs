//! Reads one or more captures back as one stream ordered by timestamp (k-way merge), with time
//! windows, filter expressions and output formatting. Never touches the kernel.
