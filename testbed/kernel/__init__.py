"""The kernel boundary: namespaces, netlink messages, rtnetlink, sysctls."""
