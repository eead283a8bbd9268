package simlab

// What the package's external tests (package simlab_test, which use
// simlab/simlabtest and so cannot be inside the package) reach inside for.

var (
	CopyFile       = copyFile
	ProcessAlive   = processAlive
	ReleaseAll     = releaseAll
	WriteBMCConfig = writeBMCConfig
)

// WithControl returns n talking to the relay control socket at path: a
// node whose relay a test runs in-process.
func WithControl(n Node, path string) *Node {
	n.control = path
	return &n
}
