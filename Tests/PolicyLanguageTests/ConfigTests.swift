import Config
import Foundation
import PolicyLanguage
import XCTest

/// The corpus of broken configurations: each file names, in `# expect: line:col: message` comments,
/// every diagnostic it must produce, in order, and nothing else.
final class ConfigTests: XCTestCase {
    var fixtures: URL { Bundle.module.resourceURL!.appendingPathComponent("Fixtures") }

    /// Runs with the fixtures folder as the working directory so that paths in messages are stable.
    func load(_ relative: String) -> (Configuration, [Diagnostic]) {
        let previous = FileManager.default.currentDirectoryPath
        FileManager.default.changeCurrentDirectoryPath(fixtures.deletingLastPathComponent().path)
        defer { FileManager.default.changeCurrentDirectoryPath(previous) }
        return ConfigLoader.load(path: "Fixtures/" + relative)
    }

    func testBrokenCorpus() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: fixtures.appendingPathComponent("broken").path)
            .filter { $0.hasSuffix(".conf") }.sorted()
        XCTAssertGreaterThanOrEqual(names.count, 15)
        for name in names {
            let text = try String(contentsOf: fixtures.appendingPathComponent("broken/\(name)"), encoding: .utf8)
            // `# expect: line:col: message` is in this file; `# expect: path:line:col: message` elsewhere.
            let expected = text.split(separator: "\n").filter { $0.hasPrefix("# expect: ") }
                .map { line -> String in
                    let rest = line.dropFirst("# expect: ".count)
                    return rest.first?.isNumber == true ? "Fixtures/broken/\(name):" + rest : String(rest)
                }
            XCTAssertFalse(expected.isEmpty, "\(name) has no expectation")
            var (_, diagnostics) = load("broken/\(name)")
            // Warnings count only where the file expects some (most files have no rules block).
            if !expected.contains(where: { $0.contains(": warning: ") }) { diagnostics.removeAll { $0.severity == .warning } }
            XCTAssertEqual(diagnostics.map(\.description), expected, name)
        }
    }

    func testValidConfigurationWithInclude() {
        let (c, diagnostics) = load("valid/full.conf")
        XCTAssertEqual(diagnostics, [])
        XCTAssertEqual(c.hostname, "relay.example.org")
        XCTAssertEqual(c.listeners.map(\.name), ["mx", "submission"])
        XCTAssertEqual(c.listeners[0].addresses.map(\.description), ["0.0.0.0:25", "[::]:25"])
        XCTAssertEqual(c.listeners[1].addresses.map(\.description), ["127.0.0.1:587", "[::1]:587"])
        XCTAssertEqual(c.limits.messageSize, 50 * 1024 * 1024)
        XCTAssertEqual(c.limits.commandTimeout, .seconds(300))
        XCTAssertEqual(c.limits.shutdownTimeout, .seconds(60))
        XCTAssertEqual(c.smtp.greetingDelay, .milliseconds(250))
        XCTAssertEqual(c.smtp.normalizeBareLF.map(\.description), ["192.0.2.0/24", "2001:db8::/32"])
        XCTAssertEqual(c.queue.writers, 16)
        XCTAssertEqual(c.relay?.rules.map(\.text), ["relay from <office>", "relay to <backup>", "refuse"])
    }

    /// The copy in policies/ is what `check --print-default` prints.
    func testPoliciesFolderHoldsTheEmbeddedDefault() throws {
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let copy = try String(contentsOf: repo.appendingPathComponent("policies/embedded-default.conf"), encoding: .utf8)
        XCTAssertEqual(copy, DefaultConfiguration.text)
    }

    func testEmbeddedDefaultIsValidAndMeansWhatItSays() {
        let (c, diagnostics) = ConfigLoader.load(text: DefaultConfiguration.text, file: DefaultConfiguration.fileName)
        XCTAssertEqual(diagnostics, [])
        XCTAssertEqual(c.spool, "./var/spool")
        XCTAssertEqual(c.listeners.flatMap(\.addresses).map(\.description), ["127.0.0.1:2525", "[::1]:2525"])
        XCTAssertEqual(c.limits.messageSize, 25 * 1024 * 1024)
        XCTAssertEqual(c.limits.recipients, 100)
    }

    /// TLS and AUTH settings as the server reads them: modes, CAs, backends per listener or global.
    func testTLSAndAuthentication() {
        let text = """
            spool /tmp/x
            tls { certificate "a.pem" "a.key"; certificate "b.pem" "b.key" }
            ca corp file "ca.pem"
            ldap directory { uri "ldap://127.0.0.1:389" "ldaps://127.0.0.2"; dn-template "uid=%u,dc=example,dc=org"; timeout 3s }
            auth { backends directory; mechanisms PLAIN; failure-delay 1s; client-failure-limit 7; senders people }
            senders people { alice alice@example.org @example.net }
            listener mx { address 0.0.0.0:25; auth none }
            listener submission { address 0.0.0.0:587; tls required; client-certificates corp }
            listener plain { address 127.0.0.1:26; tls none }
            rules { relay authenticated; refuse }
            """
        let (c, diagnostics) = ConfigLoader.load(text: text, file: "/etc/relaygate/t.conf")
        XCTAssertEqual(diagnostics.map(\.description),
                       ["/etc/relaygate/t.conf:9:1: warning: listener 'plain' has no TLS, so AUTH is never offered there; add a certificate or tls may"])
        XCTAssertEqual(c.tls.certificates.map(\.chain), ["/etc/relaygate/a.pem", "/etc/relaygate/b.pem"])
        XCTAssertEqual(c.listeners.map { c.tlsMode(of: $0) }, [.may, .required, TLSMode.none])
        XCTAssertEqual(c.listeners[1].clientCertificateAuthorities, ["corp"])
        XCTAssertEqual(c.listeners.map { c.authBackends(of: $0) }, [[], ["directory"], ["directory"]])
        XCTAssertEqual(c.auth.mechanisms, [.plain])
        XCTAssertEqual(c.auth.failureDelay, .seconds(1))
        XCTAssertEqual(c.auth.throttle.clientLimit, 7)
        XCTAssertEqual(c.auth.configuredSenders(of: "alice"), ["alice@example.org", "@example.net"])
        guard case .ldap(let l) = c.auth.backends["directory"] else { return XCTFail("no ldap backend") }
        XCTAssertEqual(l.uris, ["ldap://127.0.0.1:389", "ldaps://127.0.0.2"])
        XCTAssertEqual(l.timeoutSeconds, 3)
    }

    func testSizesAndDurations() {
        XCTAssertEqual(ConfigLoader.parseSize("512k"), 512 * 1024)
        XCTAssertEqual(ConfigLoader.parseSize("1G"), 1 << 30)
        XCTAssertEqual(ConfigLoader.parseSize("2MiB"), 2 << 20)
        XCTAssertEqual(ConfigLoader.parseSize("1000"), 1000)
        XCTAssertNil(ConfigLoader.parseSize("M"))
        XCTAssertNil(ConfigLoader.parseSize("-1"))
        XCTAssertEqual(ConfigLoader.parseDuration("2d"), .seconds(172_800))
        XCTAssertNil(ConfigLoader.parseDuration("1.5s"))
    }
}
