"""engine/linux/idmapped_mounts.py on the real kernel: trees idmapped through a user namespace's map.

Each case runs in a mount namespace of its own (unshare -m, private propagation), on
directories under the test's tmp_path (this host's ext4), and reports as JSON what the
files look like through the idmapped mount and on disk.
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
from lxcsm.engine.linux import idmapped_mounts, kernel, mounts
T = sys.argv[1]
MAP = [("u", 0, 100000, 65536), ("g", 0, 100000, 65536)]

def target(name):
    os.makedirs(os.path.join(T, name), exist_ok=True)
    return os.open(os.path.join(T, name), os.O_PATH | os.O_DIRECTORY)

def as_uid(uid, work):
    # run work() in a child with uid and gid `uid` and no groups; its exit status is returned
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            work()
        finally:
            os._exit(0)
    return os.waitpid(pid, 0)[1]

def mount_fields(path):
    for line in open("/proc/self/mountinfo"):
        fields = line.split()
        if fields[4] == path:
            return fields[5].split(","), fields[6:fields.index("-")]
    return None

exec(sys.argv[2])
"""


def run(tmp_path, code: str):
    result = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", RUNNER,
                             str(tmp_path), code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_file_owned_by_0_on_disk_is_the_containers_root_through_the_mount_and_back(tmp_path):
    seen = run(tmp_path, """
os.makedirs(T + "/src/dir")
open(T + "/src/file", "w").close()
os.chown(T + "/src/file", 0, 5)
userns = idmapped_mounts.user_namespace(MAP)
mounts.attach(idmapped_mounts.idmapped_tree(T + "/src", userns), target("dst"))
through = os.stat(T + "/dst/file")
# uid 100000 (the container's root) creates a file through the mount, relative to a dir fd
# opened before it dropped root: the dirs above tmp_path are root's alone.
directory = os.open(T + "/dst/dir", os.O_PATH | os.O_DIRECTORY)
status = as_uid(100000, lambda: os.close(os.open("made", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=directory)))
made_disk, made_through = os.stat(T + "/src/dir/made"), os.stat(T + "/dst/dir/made")
# host root has no id in the map: it cannot create a file through the mount (EOVERFLOW).
try:
    os.close(os.open(T + "/dst/root-made", os.O_CREAT | os.O_WRONLY, 0o644))
    root_made = "made"
except OSError as err:
    root_made = err.errno
options, _optional = mount_fields(T + "/dst")
print(json.dumps({"through": [through.st_uid, through.st_gid], "status": status,
                  "made_disk": [made_disk.st_uid, made_disk.st_gid],
                  "made_through": [made_through.st_uid, made_through.st_gid],
                  "root_made": root_made, "idmapped": "idmapped" in options,
                  "src_idmapped": "idmapped" in mount_fields(T + "/src")[0] if mount_fields(T + "/src") else False}))
""")
    assert seen["through"] == [100000, 100005]
    assert seen["status"] == 0
    assert seen["made_disk"] == [0, 0] and seen["made_through"] == [100000, 100000]
    assert seen["root_made"] == 75   # EOVERFLOW
    assert seen["idmapped"] and not seen["src_idmapped"]


def test_the_copy_of_a_shared_mount_is_its_slave_not_its_peer(tmp_path):
    seen = run(tmp_path, """
os.makedirs(T + "/shared/src/inner")
kernel.mount(T + "/shared", T + "/shared", None, kernel.MS_BIND)
kernel.mount(None, T + "/shared", None, kernel.MS_SHARED)
userns = idmapped_mounts.user_namespace(MAP)
mounts.attach(idmapped_mounts.idmapped_tree(T + "/shared/src", userns), target("dst"))
# mounted under the copy: a peer would show it under the source too
kernel.mount("inner", T + "/dst/inner", "tmpfs")
print(json.dumps({"optional": mount_fields(T + "/dst")[1], "back": mount_fields(T + "/shared/src/inner") is not None}))
""")
    assert [tag.split(":")[0] for tag in seen["optional"]] == ["master"]
    assert seen["back"] is False


def test_the_namespace_has_the_maps_and_no_process_is_left(tmp_path):
    seen = run(tmp_path, """
userns = idmapped_mounts.user_namespace([("u", 0, 200000, 1000), ("u", 1000, 1000, 1), ("g", 0, 300000, 10)])
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    kernel.setns(userns, kernel.CLONE_NEWUSER)
    os.write(write, (open("/proc/self/uid_map").read() + "|" + open("/proc/self/gid_map").read()).encode())
    os._exit(0)
os.close(write)
maps = os.read(read, 4096).decode()
os.waitpid(pid, 0)
try:
    left = os.waitpid(-1, os.WNOHANG)
except ChildProcessError:
    left = None
print(json.dumps({"maps": [" ".join(line.split()) for line in maps.replace("|", "\\n").splitlines() if line],
                  "left": left}))
""")
    assert seen["maps"] == ["0 200000 1000", "1000 1000 1", "0 300000 10"]
    assert seen["left"] is None


def test_a_filesystem_that_cannot_be_idmapped_is_named_with_its_type(tmp_path):
    seen = run(tmp_path, """
os.makedirs(T + "/ram")
kernel.mount("lxcsm-test", T + "/ram", "ramfs")
os.makedirs(T + "/tree/sub")
kernel.mount("lxcsm-test", T + "/tree/sub", "ramfs")
os.makedirs(T + "/plain/dir")
errors = []
for path in (T + "/ram", T + "/tree"):
    try:
        idmapped_mounts.check_idmappable(path)
        errors.append("idmapped")
    except idmapped_mounts.NotIdmappable as err:
        errors.append(str(err))
idmapped_mounts.check_idmappable(T + "/plain")
idmapped_mounts.check_idmappable(T + "/tree", recursive=False)   # the ramfs below is not copied
print(json.dumps(errors))
""")
    assert seen == [
        f"cannot idmap {tmp_path}/ram: the filesystem mounted on {tmp_path}/ram (ramfs) does not support "
        f"idmapped mounts (mount_setattr: EINVAL)",
        f"cannot idmap {tmp_path}/tree: the filesystem mounted on {tmp_path}/tree/sub (ramfs) does not support "
        f"idmapped mounts (mount_setattr: EINVAL)"]
