"""Developer tools used by tests and benchmarks (throwaway servers, free ports)."""
