import Foundation
import PolicyLanguage

/// Reads configuration files from the file system for the parser.
public struct FileSourceReader: SourceReader {
    public init() {}

    public func read(_ path: String) -> String? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    public func resolve(_ path: String, from: String) -> String {
        if path.hasPrefix("/") { return path }
        let dir = (from as NSString).deletingLastPathComponent
        return dir.isEmpty ? path : (dir as NSString).appendingPathComponent(path)
    }
}
