"""The stress suite: a fuzzer, a burst, a soak and fault injection against real servers (``__main__``)."""
