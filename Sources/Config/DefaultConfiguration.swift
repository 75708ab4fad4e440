/// The embedded default `make run` starts with, written in the configuration language itself
/// (printed by `relaygate check --print-default`). Relaying is allowed for 127.0.0.1 and ::1 only.
/// A configuration without a `rules` block gets these rules (and a warning).
public enum DefaultConfiguration {
    public static let fileName = "<embedded default>"
    public static let text = """
        # Relaygate's embedded default: a gateway for this machine only.
        # Relaying: clients 127.0.0.1 and ::1 may send anywhere; every other recipient is refused at RCPT.

        spool ./var/spool

        listener default {
            address 127.0.0.1:2525
            address [::1]:2525
        }

        # Who may relay: first match wins; the last rule refuses everything else.
        networks loopback {
            127.0.0.1
            ::1
        }

        rules {
            relay from <loopback>
            refuse
        }

        limits {
            message-size 25M
            recipients 100
            errors 10
            sessions 1000
            sessions-per-client 50
            command-timeout 5m
            data-timeout 10m
            received-headers 30
        }

        # Delivery: this development default keeps what it accepts in the queue (relaygate queue list)
        # and sends nothing out. A gateway that forwards to MX hosts leaves this block out.
        outbound {
            delivery no
        }

        """
}
