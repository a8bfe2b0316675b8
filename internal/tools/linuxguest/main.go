// Command linuxguest builds Godwit's Linux guest from Debian's packages
// (make linux-guest): the kernel of linux-image-amd64 as a bzImage and as
// the uncompressed vmlinux inside it (which the VMM boots by its PVH
// entry, skipping the decompressor), and an
// initramfs holding busybox-static, the virtio modules of that kernel, the
// project's /init (guest/linux/init) and its workload gwload
// (guest/linux/gwload), which speaks the test guest's serial protocol.
//
// Nothing comes from anywhere but apt and this repository. The output
// directory (default guest/build/linux, ignored by git) keeps the
// downloaded packages and a key of every input (package versions, the
// sources of /init and gwload); a run whose key matches does nothing.
//
//	go run ./internal/tools/linuxguest [--out DIR]
//
// Outputs: DIR/bzImage, DIR/vmlinux, DIR/initramfs.cpio.gz, DIR/key.
package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// modules are the kernel modules the guest needs; their dependencies (the
// "depends=" of each module's .modinfo) come along, and /init loads them
// in dependency order.
var modules = []string{"virtio_pci", "virtio_net", "virtio_blk"}

// keyVersion changes when the layout of the image changes.
const keyVersion = "linuxguest 3"

func main() {
	out := flag.String("out", "guest/build/linux", "output directory (kept between runs as a cache)")
	flag.Parse()
	if err := build(*out); err != nil {
		fmt.Fprintln(os.Stderr, "linuxguest:", err)
		os.Exit(1)
	}
}

// pkg is a Debian package at the version apt would install.
type pkg struct{ name, version string }

func build(out string) error {
	kernelPkg, err := kernelPackage()
	if err != nil && os.Geteuid() == 0 {
		// A fresh machine may have no package lists yet.
		if uerr := run("", "apt-get", "update", "-qq"); uerr != nil {
			return fmt.Errorf("%v; apt-get update: %v", err, uerr)
		}
		kernelPkg, err = kernelPackage()
	}
	if err != nil {
		return err
	}
	pkgs := []pkg{{name: kernelPkg}, {name: "busybox-static"}}
	for i := range pkgs {
		if pkgs[i].version, err = candidate(pkgs[i].name); err != nil {
			return err
		}
	}
	key, err := inputKey(pkgs)
	if err != nil {
		return err
	}
	if old, err := os.ReadFile(filepath.Join(out, "key")); err == nil && string(old) == key {
		fmt.Printf("linuxguest: %s is up to date (%s %s, %s %s)\n", out, pkgs[0].name, pkgs[0].version, pkgs[1].name, pkgs[1].version)
		return nil
	}
	debs := filepath.Join(out, "debs")
	root := filepath.Join(out, "root")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return err
	}
	os.RemoveAll(root)
	for _, p := range pkgs {
		deb, err := download(debs, p)
		if err != nil {
			return err
		}
		if err := run("", "dpkg-deb", "-x", deb, root); err != nil {
			return err
		}
	}
	kver := strings.TrimPrefix(kernelPkg, "linux-image-")
	kernel, err := os.ReadFile(filepath.Join(root, "boot", "vmlinuz-"+kver))
	if err != nil {
		return fmt.Errorf("the kernel package has no bzImage: %w", err)
	}
	elfKernel, err := vmlinux(kernel)
	if err != nil {
		return fmt.Errorf("vmlinux from %s: %w", "vmlinuz-"+kver, err)
	}
	gwload := filepath.Join(out, "gwload")
	if err := goBuild(gwload); err != nil {
		return err
	}
	img, err := initramfs(root, kver, gwload)
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{"bzImage": kernel, "vmlinux": elfKernel, "initramfs.cpio.gz": img} {
		if err := os.WriteFile(filepath.Join(out, name), data, 0o644); err != nil {
			return err
		}
	}
	os.RemoveAll(root)
	if err := os.WriteFile(filepath.Join(out, "key"), []byte(key), 0o644); err != nil {
		return err
	}
	fmt.Printf("linuxguest: %s/bzImage (%d KiB, %s), vmlinux (%d KiB) and initramfs.cpio.gz (%d KiB)\n", out, len(kernel)>>10, kver, len(elfKernel)>>10, len(img)>>10)
	return nil
}

// kernelPackage resolves linux-image-amd64 to the versioned package it
// depends on (linux-image-6.1.0-N-amd64).
func kernelPackage() (string, error) {
	b, err := exec.Command("apt-cache", "depends", "linux-image-amd64").Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends linux-image-amd64: %v (run apt-get update first)", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if dep, ok := strings.CutPrefix(strings.TrimSpace(l), "Depends: "); ok && strings.HasPrefix(dep, "linux-image-") {
			return dep, nil
		}
	}
	return "", errors.New("linux-image-amd64 depends on no linux-image package (run apt-get update first)")
}

// candidate returns the version apt would install of name.
func candidate(name string) (string, error) {
	b, err := exec.Command("apt-cache", "policy", name).Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache policy %s: %v", name, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Candidate: "); ok && v != "(none)" {
			return v, nil
		}
	}
	return "", fmt.Errorf("apt knows no version of %s (run apt-get update first)", name)
}

// inputKey hashes everything the image is made of.
func inputKey(pkgs []pkg) (string, error) {
	h := sha256.New()
	fmt.Fprintln(h, keyVersion)
	for _, p := range pkgs {
		fmt.Fprintln(h, p.name, p.version)
	}
	fmt.Fprintln(h, strings.Join(modules, " "))
	var files []string
	err := filepath.WalkDir("guest/linux", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("%v (run from the repository's top directory)", err)
	}
	files = append(files, "go.mod", "go.sum")
	sort.Strings(files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %x\n", f, sha256.Sum256(b))
	}
	return hex.EncodeToString(h.Sum(nil)) + "\n", nil
}

// download fetches p's .deb into dir unless it is there.
func download(dir string, p pkg) (string, error) {
	match, _ := filepath.Glob(filepath.Join(dir, p.name+"_*.deb"))
	for _, m := range match {
		if strings.Contains(m, "_"+strings.ReplaceAll(p.version, ":", "%3a")+"_") {
			return m, nil
		}
		os.Remove(m) // an older version
	}
	if err := run(dir, "apt-get", "download", "-q", p.name+"="+p.version); err != nil {
		return "", err
	}
	match, _ = filepath.Glob(filepath.Join(dir, p.name+"_*.deb"))
	if len(match) != 1 {
		return "", fmt.Errorf("apt-get download %s left %d files", p.name, len(match))
	}
	return match[0], nil
}

// goBuild builds gwload for the guest: static, linux/amd64.
func goBuild(dst string) error {
	abs, err := filepath.Abs(dst)
	if err != nil {
		return err
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", abs, "./guest/linux/gwload")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build gwload: %w", err)
	}
	return nil
}

// initramfs builds the gzipped cpio archive.
func initramfs(root, kver, gwload string) ([]byte, error) {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	c := newCPIO(zw)
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"} {
		c.Dir(d)
	}
	c.CharDev("dev/console", 0o600, 5, 1)
	c.CharDev("dev/ttyS0", 0o600, 4, 64)
	c.CharDev("dev/null", 0o666, 1, 3)
	add := func(name, src string, perm uint32) error {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		c.File(name, perm, b)
		return nil
	}
	if err := add("init", "guest/linux/init", 0o755); err != nil {
		return nil, err
	}
	if err := add("bin/busybox", filepath.Join(root, "bin", "busybox"), 0o755); err != nil {
		return nil, fmt.Errorf("busybox-static: %w", err)
	}
	c.Symlink("bin/sh", "busybox")
	if err := add("bin/gwload", gwload, 0o755); err != nil {
		return nil, err
	}
	mods, err := moduleOrder(filepath.Join(root, "lib", "modules", kver), modules)
	if err != nil {
		return nil, err
	}
	var load []string
	for _, m := range mods {
		name := filepath.Base(m)
		if err := add("lib/modules/"+name, m, 0o644); err != nil {
			return nil, err
		}
		load = append(load, name)
	}
	c.File("lib/modules/load", 0o644, []byte(strings.Join(load, "\n")+"\n"))
	if err := c.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func run(dir, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
