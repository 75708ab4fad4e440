import Config
import Glibc
import MailModel
import PolicyCheck
import PolicyLanguage
import RelayPolicy
import TLS
import Transport

/// `relaygate explain` and `relaygate test`: the server's engine, asked from the command line.
enum Explain {
    static func engine(_ path: String?, command: String) -> (RelayEngine, Configuration) {
        let config = LoadConfiguration.load(path: path)
        guard let engine = config.relayEngine(hostname: config.hostname ?? Serve.systemHostname(),
                                              localAddresses: InterfaceAddresses.all()) else {
            RelaygateCommand.fail("\(path ?? DefaultConfiguration.fileName): no 'rules' block")
        }
        return (engine, config)
    }

    static func run(_ args: [String]) {
        let o = Options(args, command: "explain",
                        valued: ["config", "client", "listener", "helo", "auth", "cert", "cert-spki", "cert-subject", "cert-san",
                                 "cert-ca", "from", "rcpt"],
                        flags: ["tls", "json"], positional: 0)
        guard let clientText = o.last("client") else { RelaygateCommand.usageError("explain needs --client ADDR", command: "explain") }
        guard let client = IPAddress(clientText) else {
            RelaygateCommand.usageError("--client '\(clientText)' is not an IP address", command: "explain")
        }
        guard let rcptTexts = o.values["rcpt"], !rcptTexts.isEmpty else {
            RelaygateCommand.usageError("explain needs --rcpt ADDR", command: "explain")
        }
        var rcpts: [ForwardPath] = []
        for t in rcptTexts {
            guard let r = FactsParser.recipient(t) else { RelaygateCommand.usageError("--rcpt '\(t)' is not an address", command: "explain") }
            rcpts.append(r)
        }
        var sender = ReversePath.null
        if let f = o.last("from") {
            guard let s = FactsParser.sender(f) else { RelaygateCommand.usageError("--from '\(f)' is not an address", command: "explain") }
            sender = s
        }
        var cert: CertificateFacts?
        if let pin = o.last("cert-spki") {
            guard let hex = FactsParser.spki(pin) else {
                RelaygateCommand.usageError("--cert-spki wants sha256: and 64 hex digits", command: "explain")
            }
            cert = CertificateFacts(spkiSHA256: hex, subject: o.last("cert-subject"), subjectAltNames: o.values["cert-san"] ?? [],
                                    verifiedBy: Set(o.values["cert-ca"] ?? []))
        }
        let (engine, config) = engine(o.last("config"), command: "explain")
        if let pem = o.last("cert") {
            if cert != nil { RelaygateCommand.usageError("--cert and --cert-spki exclude each other", command: "explain") }
            do {
                let authorities = config.lists.authorities.sorted { $0.key < $1.key }.map { (name: $0.key, file: $0.value) }
                cert = try PeerCertificate.load(pemFile: pem, authorities: authorities).facts
            } catch {
                RelaygateCommand.fail("--cert: \(error)")
            }
        }
        // Without --listener: the first listener of the configuration, as a client of it would be.
        let session = SessionFacts(listener: o.last("listener") ?? config.listeners.first?.name ?? "default", client: client,
                                   heloName: o.last("helo"), tls: o.flags.contains("tls"), certificate: cert,
                                   authenticatedUser: o.last("auth"))
        let x = Explanation(engine: engine, session: session, sender: sender, recipients: rcpts)
        print(o.flags.contains("json") ? x.json : x.text, terminator: o.flags.contains("json") ? "\n" : "")
        exit(0)
    }
}

enum PolicyTest {
    static func run(_ args: [String]) {
        let o = Options(args, command: "test", valued: ["config"], flags: ["verbose"], positional: 1000)
        guard !o.positional.isEmpty else { RelaygateCommand.usageError("test needs one or more case files", command: "test") }
        let (engine, config) = Explain.engine(o.last("config"), command: "test")
        var total = 0, failed = 0
        for path in o.positional {
            var reader = CaseFileReader(defaultListener: config.listeners.first?.name ?? "default")
            let cases = reader.read(path: path, reader: FileSourceReader())
            for d in reader.diagnostics { Console.err("\(d)\n") }
            if reader.diagnostics.contains(where: { $0.severity == .error }) { RelaygateCommand.fail("\(path): case file has errors") }
            let (passed, failures) = CaseRunner.run(cases, engine: engine)
            total += cases.count
            failed += failures.count
            for f in failures {
                print("FAIL \(f.testCase.location): \(f.testCase.name): \(f.message)")
                print(f.explanation.split(separator: "\n", omittingEmptySubsequences: false).map { "    " + $0 }.joined(separator: "\n"))
            }
            print("\(path): \(passed) passed, \(failures.count) failed")
        }
        exit(failed == 0 && total > 0 ? 0 : 1)
    }
}
