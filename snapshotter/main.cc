#include "snapshotter/daemon.h"

int main(int argc, char** argv) { return ipfly::snapshotter::RunSnapshotterMain(argc, argv); }
