//! retrace's BPF programs (C, CO-RE) and their generated skeleton.
