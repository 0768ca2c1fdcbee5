"""`memory-r1 serve`: the REST service over the `Memory` API. A leaf: nothing in the library imports it."""
