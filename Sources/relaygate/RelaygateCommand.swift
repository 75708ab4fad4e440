import Glibc

/// The `relaygate` command line: parses arguments and calls the libraries. No SMTP logic lives here.
enum RelaygateCommand {
    static let version = "0.1.0"

    static func main() {
        var args = Array(CommandLine.arguments.dropFirst())
        guard let verb = args.first else {
            usageError("no command given")
        }
        args.removeFirst()
        switch verb {
        case "serve": Serve.run(args)
        case "check": Check.run(args)
        case "queue": QueueCommand.run(args)
        case "route": RouteCommand.run(args)
        case "explain": Explain.run(args)
        case "test": PolicyTest.run(args)
        case "help", "--help", "-h": Help.run(args)
        case "--version", "version":
            print("relaygate \(version)")
            exit(0)
        default:
            usageError("unknown command '\(verb)'")
        }
    }

    /// A usage error: one line with a hint, exit status 2.
    static func usageError(_ message: String, command: String? = nil) -> Never {
        let hint = command.map { "relaygate help \($0)" } ?? "relaygate help"
        Console.err("relaygate: \(message) (see '\(hint)')\n")
        exit(2)
    }

    static func fail(_ message: String) -> Never {
        Console.err("relaygate: \(message)\n")
        exit(1)
    }
}

/// A minimal option reader: `--name value`, `--name=value` and flags; everything is checked.
struct Options {
    var values: [String: [String]] = [:]
    var flags: Set<String> = []
    var positional: [String] = []

    init(_ args: [String], command: String, valued: Set<String>, flags allowedFlags: Set<String>, positional maxPositional: Int = 0) {
        var i = 0
        while i < args.count {
            let a = args[i]
            if a.hasPrefix("--") {
                var name = String(a.dropFirst(2))
                var value: String? = nil
                if let eq = name.firstIndex(of: "=") {
                    value = String(name[name.index(after: eq)...])
                    name = String(name[..<eq])
                }
                if valued.contains(name) {
                    if value == nil {
                        i += 1
                        guard i < args.count else { RelaygateCommand.usageError("--\(name) needs a value", command: command) }
                        value = args[i]
                    }
                    values[name, default: []].append(value!)
                } else if allowedFlags.contains(name) && value == nil {
                    flags.insert(name)
                } else {
                    RelaygateCommand.usageError("unknown option '\(a)' for \(command)", command: command)
                }
            } else {
                positional.append(a)
            }
            i += 1
        }
        if positional.count > maxPositional {
            RelaygateCommand.usageError("unexpected argument '\(positional[maxPositional])' for \(command)", command: command)
        }
    }

    func last(_ name: String) -> String? { values[name]?.last }
}
