import Glibc

enum Help {
    static let topics: [String: String] = [
        "serve": """
            usage: relaygate serve [--config FILE] [--listen [NAME=]ADDR:PORT]... [--spool DIR]
                                   [--tls-cert CHAIN.pem --tls-key KEY.pem] [--log-format text|json] [--debug]
            Runs the gateway in the foreground and logs to stderr. Without --config it uses the embedded
            default (relaygate check --print-default). --listen ADDR:PORT (repeatable) replaces every
            listener with one named 'default'; --listen NAME=ADDR:PORT replaces the addresses of the
            listener NAME only. --spool replaces the spool. SIGTERM or SIGINT: stop accepting, let
            sessions finish within limits.shutdown-timeout, exit 0. SIGHUP: re-read the configuration.
            --tls-cert/--tls-key: offer STARTTLS with this certificate where the configuration names none.
            """,
        "check": """
            usage: relaygate check --config FILE
                   relaygate check --print-default
            Reads the configuration and prints every problem as file:line:col: message.
            Exit status 0 when it is valid, 1 when it is not.
            """,
        "queue": """
            usage: relaygate queue list [--json] [--spool DIR | --config FILE]
                   relaygate queue show ID [--json] [--spool DIR | --config FILE]
                   relaygate queue flush [ID... | --domain DOMAIN]
                   relaygate queue remove|bounce|hold|release ID...
            Safe while the server runs. list: every message, oldest first, with each recipient's state
            (held messages marked !); show: one message's envelope, state and data; flush: try now;
            remove: delete without a bounce; bounce: return the pending recipients to the sender;
            hold: keep out of delivery until release.
            """,
        "explain": """
            usage: relaygate explain [--config FILE] --client ADDR [--listener NAME] [--helo NAME] [--tls]
                                     [--auth USER] [--cert PEMFILE | --cert-spki sha256:HEX [--cert-subject DN]
                                     [--cert-san NAME] [--cert-ca NAME]] [--from ADDR] --rcpt ADDR... [--json]
            Prints, for each recipient, the verdict the server would give, the rule that decided it
            (file:line and text) and why every rule before it did not match. --json: one JSON object.
            --cert reads a client certificate as the server would: its pin, subject, names, and the
            configured CAs it verifies against.
            """,
        "route": """
            usage: relaygate route [--config FILE] ADDRESS... [--json]
            Where mail for each address would go: rewriting, the route or the MX records with their
            addresses, what the backup-MX rule dropped and why, and the hosts in the order they are tried.
            """,
        "test": """
            usage: relaygate test [--config FILE] CASES...
            Runs policy test cases (see docs/policy-language.md, "Policy test cases") and prints every
            failure with its explanation. Exit status 0 when all pass, 1 otherwise.
            """,
        "help": """
            usage: relaygate help [COMMAND]
            """,
    ]

    static let overview = """
        relaygate: a relay-control SMTP gateway

        usage: relaygate COMMAND [OPTIONS]

        commands:
          serve     run the gateway in the foreground
          check     validate a configuration file
          queue     list, show, flush, remove, bounce, hold and release queued messages
          route     show where mail for an address would be delivered
          explain   say why a client, identity and address would be relayed or refused
          test      run policy test cases
          help      show help for a command
          --version print the version

        'relaygate help COMMAND' tells more.
        """

    static func run(_ args: [String]) {
        guard let topic = args.first else {
            print(overview)
            exit(0)
        }
        guard args.count == 1, let text = topics[topic] else {
            RelaygateCommand.usageError("no help for '\(args.joined(separator: " "))'")
        }
        print(text)
        exit(0)
    }
}
