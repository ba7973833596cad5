"""The only package that changes the kernel: namespaces, links, addresses, routes, sysctls."""
