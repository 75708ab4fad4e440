import Config
import Glibc
import PolicyLanguage

enum Check {
    static func run(_ args: [String]) {
        let o = Options(args, command: "check", valued: ["config"], flags: ["print-default"])
        if o.flags.contains("print-default") {
            print(DefaultConfiguration.text, terminator: "")
            exit(0)
        }
        guard let path = o.last("config") else { RelaygateCommand.usageError("check needs --config FILE", command: "check") }
        let (_, diagnostics) = ConfigLoader.load(path: path)
        for d in diagnostics { print(d) }
        let errors = diagnostics.filter { $0.severity == .error }.count
        if errors > 0 {
            Console.err("relaygate: \(path): \(errors) error\(errors == 1 ? "" : "s")\n")
            exit(1)
        }
        exit(0)
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
