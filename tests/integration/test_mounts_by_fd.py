"""engine/linux/mounts.py on the real kernel: mounts made detached, attached onto a target's fd.

Each case runs in a mount namespace of its own (unshare -m, private propagation), on
directories under the test's tmp_path, and reads back what /proc/self/mountinfo says: the
mount(2) flags must land where mount(2) itself puts them (per mount, or on the superblock).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.root

# argv: a python snippet run in the new namespace with T (a tmp dir) set; prints JSON.
RUNNER = """
import json, os, sys
from lxcsm.engine.linux import kernel, mounts, paths
T = sys.argv[1]

def info(path):
    for line in open("/proc/self/mountinfo"):
        fields = line.split()
        if fields[4] == path:
            dash = fields.index("-")
            return {"options": fields[5].split(","), "fstype": fields[dash + 1], "source": fields[dash + 2],
                    "super": fields[dash + 3].split(",")}
    return None

def target(name):
    os.makedirs(os.path.join(T, name), exist_ok=True)
    return os.open(os.path.join(T, name), os.O_PATH | os.O_DIRECTORY)

exec(sys.argv[2])
"""


def run(tmp_path, code: str):
    result = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", RUNNER,
                             str(tmp_path), code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_new_filesystem_gets_its_flags_per_mount_and_on_the_superblock(tmp_path):
    seen = run(tmp_path, """
fd = mounts.new_filesystem("tmpfs", "lxcsm-test", kernel.MS_RDONLY | kernel.MS_NOSUID | kernel.MS_NODEV
                           | kernel.MS_NOEXEC | kernel.MS_NOATIME, "size=1m,mode=700")
mounts.attach(fd, target("fs"))
print(json.dumps({"fs": info(T + "/fs"), "mode": oct(os.stat(T + "/fs").st_mode & 0o777)}))
""")
    fs = seen["fs"]
    assert (fs["fstype"], fs["source"]) == ("tmpfs", "lxcsm-test")
    assert {"ro", "nosuid", "nodev", "noexec", "noatime"} <= set(fs["options"])
    assert {"ro", "size=1024k", "mode=700"} <= set(fs["super"])
    assert seen["mode"] == "0o700"


def test_a_bad_option_names_itself(tmp_path):
    seen = run(tmp_path, """
try:
    mounts.new_filesystem("tmpfs", "x", 0, "size=lots")
    print(json.dumps("mounted"))
except OSError as err:
    print(json.dumps([err.errno, err.filename]))
""")
    assert seen == [22, "size"]   # EINVAL


def test_a_copy_is_recursive_only_when_asked_and_its_fd_takes_the_remount(tmp_path):
    seen = run(tmp_path, """
os.makedirs(T + "/src/sub")
sub = mounts.new_filesystem("tmpfs", "inner", 0)
mounts.attach(sub, target("src/sub"))
os.mkdir(T + "/src/sub/marker")
flat = mounts.copy_tree(T + "/src", recursive=False)
mounts.attach(flat, target("flat"))
deep = mounts.copy_tree(T + "/src", recursive=True)
mounts.attach(deep, target("deep"))
kernel.mount(None, paths.proc_fd(deep), None, kernel.MS_REMOUNT | kernel.MS_BIND | kernel.MS_RDONLY)
print(json.dumps({"flat": os.listdir(T + "/flat/sub"), "deep": os.listdir(T + "/deep/sub"),
                  "deep_ro": "ro" in info(T + "/deep")["options"], "src_ro": "ro" in info(T + "/src/sub")["options"]}))
""")
    assert seen == {"flat": [], "deep": ["marker"], "deep_ro": True, "src_ro": False}
