import Foundation
import PackagePlugin

/// Writes `BuildCommit.swift` (`let buildCommit = "<commit>"`) before each build of the target,
/// from `git rev-parse` in the package's directory, so `engage-sync --version` names the commit it
/// was built from ("-dirty" when tracked files were changed, "unknown" outside a git checkout).
/// The file is rewritten only when the commit changes, so an unchanged build recompiles nothing.
@main
struct BuildCommit: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let output = context.pluginWorkDirectoryURL.appending(path: "generated")
        let script = #"""
            out="$1/BuildCommit.swift"; mkdir -p "$1"
            commit=$(git -C "$2" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
            if [ "$commit" != unknown ] && [ -n "$(git -C "$2" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
                commit="$commit-dirty"
            fi
            text="let buildCommit = \"$commit\""
            [ "$(cat "$out" 2>/dev/null)" = "$text" ] || printf '%s\n' "$text" > "$out"
            """#
        return [.prebuildCommand(displayName: "Stamp the build's commit",
                                 executable: URL(fileURLWithPath: "/bin/sh"),
                                 arguments: ["-c", script, "sh", output.path, context.package.directoryURL.path],
                                 outputFilesDirectory: output)]
    }
}
