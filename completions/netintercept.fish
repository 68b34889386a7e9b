complete -c netintercept -s w -d 'Capture file pattern, \'-\' for stdout (sets NETINTERCEPT_FILE; default netintercept.pcap)' -r -F
complete -c netintercept -s f -d 'tcpdump/libpcap filter expression (sets NETINTERCEPT_FILTER)' -r -f
complete -c netintercept -l keylog -d 'Also write TLS keys to FILE, SSLKEYLOGFILE format (sets NETINTERCEPT_KEYLOG)' -r -F
complete -c netintercept -l events -d 'Also write tcpsnitch-format traces per socket under DIR (sets NETINTERCEPT_EVENTS)' -r -f -a "(__fish_complete_directories)"
complete -c netintercept -s b -l tcp-info-bytes -d 'Sample TCP_INFO every BYTES sent+received on a socket (sets NETINTERCEPT_TCP_INFO_BYTES)' -r
complete -c netintercept -s u -l tcp-info-usec -d 'Sample TCP_INFO every USEC microseconds (sets NETINTERCEPT_TCP_INFO_USEC)' -r
complete -c netintercept -l backend -d 'auto, preload (a library), ptrace (system calls) or both (sets NETINTERCEPT_BACKEND)' -r -f -a "auto\t''
preload\t''
ptrace\t''
both\t''"
complete -c netintercept -s p -l attach -d 'Trace running processes (comma-separated pids) by ptrace until ^C, instead of a COMMAND' -r
complete -c netintercept -l no-follow -d 'Do not trace child processes (sets NETINTERCEPT_FOLLOW=0)'
complete -c netintercept -l nss-keys -d 'Private SSLKEYLOGFILE for NSS\'s TLS keys, if unset (NSS keeps a descriptor open on it)'
complete -c netintercept -s c -l events-pcap -d 'Per-socket N.pcap beside each N.json, with --events (sets NETINTERCEPT_EVENTS_PCAP=1)'
complete -c netintercept -l tcp-events -d 'Print TCP events on stderr, as deeptcptracer does (sets NETINTERCEPT_TCP_EVENTS=1)'
complete -c netintercept -s t -l timestamps -d 'With --tcp-events: each event\'s time of day (sets NETINTERCEPT_TCP_EVENTS=time)'
complete -c netintercept -s q -l quiet -d 'Say nothing at the end of the run (errors and warnings are still said)'
complete -c netintercept -s h -l help -d 'Print this help'
