{
  "targets": [
    {
      "target_name": "lockstep_fs",
      "sources": ["native/lockstep-fs.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11"]
    }
  ]
}
