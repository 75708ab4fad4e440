import Config
import Glibc
import PolicyLanguage
import TLS

enum Check {
    static func run(_ args: [String]) {
        let o = Options(args, command: "check", valued: ["config"], flags: ["print-default"])
        if o.flags.contains("print-default") {
            print(DefaultConfiguration.text, terminator: "")
            exit(0)
        }
        guard let path = o.last("config") else { RelaygateCommand.usageError("check needs --config FILE", command: "check") }
        var (config, diagnostics) = ConfigLoader.load(path: path)
        if !diagnostics.contains(where: { $0.severity == .error }) { diagnostics += tlsProblems(config) }
        for d in diagnostics { print(d) }
        let errors = diagnostics.filter { $0.severity == .error }.count
        if errors > 0 {
            Console.err("relaygate: \(path): \(errors) error\(errors == 1 ? "" : "s")\n")
            exit(1)
        }
        exit(0)
    }
}

extension Check {
    /// What `serve` would refuse at start: certificates and keys that cannot be used (unreadable, a key
    /// readable by others, a key that does not match), CA files that do not load.
    static func tlsProblems(_ config: Configuration) -> [Diagnostic] {
        var out: [Diagnostic] = []
        for c in config.tls.certificates {
            do {
                _ = try TLSServerContext(certificates: [.init(chain: c.chain, key: c.key)])
            } catch {
                out.append(Diagnostic(c.location ?? SourceLocation(file: "--tls-cert", line: 1, column: 1), "TLS: \(error)"))
            }
        }
        for (name, file) in config.lists.authorities.sorted(by: { $0.key < $1.key }) {
            do {
                _ = try PeerCertificateAuthority.check(name: name, file: file)
            } catch {
                let at = config.lists.locations[name]?.at ?? SourceLocation(file: file, line: 1, column: 1)
                out.append(Diagnostic(at, "TLS: \(error)"))
            }
        }
        return out
    }
}

/// Loads the configuration named on the command line, or the embedded default; exits 1 with every
/// diagnostic when it is invalid.
enum LoadConfiguration {
    /// Exits on errors (printing them); returns the warnings for the caller to report its own way.
    static func loadWithWarnings(path: String?) -> (Configuration, [Diagnostic]) {
        let (config, diagnostics) = path.map { ConfigLoader.load(path: $0) }
            ?? ConfigLoader.load(text: DefaultConfiguration.text, file: DefaultConfiguration.fileName)
        if diagnostics.contains(where: { $0.severity == .error }) {
            for d in diagnostics { Console.err("\(d)\n") }
            RelaygateCommand.fail("configuration has errors; nothing started")
        }
        return (config, diagnostics)
    }

    static func load(path: String?) -> Configuration {
        let (config, warnings) = loadWithWarnings(path: path)
        for d in warnings { Console.err("\(d)\n") }
        return config
    }
}
