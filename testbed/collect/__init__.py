"""Collectors that watch a run: tcp_info over time (``tcpinfo``), packet
captures and their analysis (``capture``, ``pcap``), qdisc statistics
(``qdisc``) and host load (``hostload``)."""
