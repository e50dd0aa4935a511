{
  "targets": [
    {
      "target_name": "lockstep_fs",
      "sources": ["native/lockstep-fs.c", "native/crc32c.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11"]
    }
  ]
}
