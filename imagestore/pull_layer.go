package imagestore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/crid-dev/crid/internal/atomicfile"
	"github.com/crid-dev/crid/internal/log"
)

// bufSize is the read buffer between the network and the decompressor, and
// the copy buffer when a layer is spooled to disk.
const bufSize = 1 << 20

// layerJob is one layer a pull creates.
type layerJob struct {
	desc    ocispec.Descriptor // the compressed blob
	comp    compression
	diffID  digest.Digest
	chainID digest.Digest
	parent  digest.Digest // chain-id of the parent, "" for the bottom layer
	cacheID string
	// parentCacheID is the parent's snapshot, "" for the bottom layer.
	parentCacheID string
	// prev is the job creating the parent when this pull creates it too.
	prev       *layerJob
	unpackedCh chan struct{} // closed once the snapshot is committed and verified
	recordedCh chan struct{} // closed once the layer is in layerdb

	// Written by the job's goroutine; read by the pull after the jobs ended.
	locked   bool // holds the chain lock of chainID
	unpacked bool // the snapshot cacheID exists
	recorded bool // the layer is in layerdb (and held by the pull)
	size     int64
}

// plan decides, bottom up, which layers exist (and holds them) and which
// this pull creates (and takes their chain locks). Locks are taken in chain
// order; since the chains of two images share a prefix or nothing, two
// pulls never wait for each other crosswise. A pull waiting for a chain
// another pull is creating finds it recorded once it gets the lock.
func (p *puller) plan(ctx context.Context, chain []digest.Digest, descs []ocispec.Descriptor, diffIDs []digest.Digest) error {
	s := p.s
	var prevCacheID string
	var prev *layerJob
	for i, c := range chain {
		if l, ok := s.holdLayer(c); ok {
			p.held = append(p.held, c)
			prevCacheID, prev = l.CacheID, nil
			continue
		}
		if err := s.chains.lock(ctx, c); err != nil {
			return err
		}
		if l, ok := s.holdLayer(c); ok {
			s.chains.unlock(c)
			p.held = append(p.held, c)
			prevCacheID, prev = l.CacheID, nil
			continue
		}
		comp, err := layerCompression(descs[i].MediaType)
		if err != nil {
			s.chains.unlock(c)
			return err
		}
		cacheID, err := newCacheID()
		if err != nil {
			s.chains.unlock(c)
			return err
		}
		j := &layerJob{
			desc:          descs[i],
			comp:          comp,
			diffID:        diffIDs[i],
			chainID:       c,
			cacheID:       cacheID,
			parentCacheID: prevCacheID,
			prev:          prev,
			unpackedCh:    make(chan struct{}),
			recordedCh:    make(chan struct{}),
			locked:        true,
		}
		if i > 0 {
			j.parent = chain[i-1]
		}
		p.jobs = append(p.jobs, j)
		s.mu.Lock()
		s.inflight[cacheID] = true
		s.mu.Unlock()
		prevCacheID, prev = cacheID, j
	}
	return nil
}

// pullLayers runs the jobs: downloads start bottom first, at most
// MaxConcurrentDownloads at once.
func (p *puller) pullLayers(ctx context.Context) error {
	if len(p.jobs) == 0 {
		return nil
	}
	g, gctx := errgroup.WithContext(ctx)
	sem := make(chan struct{}, p.s.opts.MaxConcurrentDownloads)
dispatch:
	for _, j := range p.jobs {
		select {
		case sem <- struct{}{}:
		case <-gctx.Done():
			break dispatch
		}
		g.Go(func() error { return p.runJob(gctx, j, sem) })
	}
	err := g.Wait()
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return err
}

// runJob downloads, unpacks, verifies and records one layer. It owns one
// slot of sem, which it frees as soon as the download is over.
func (p *puller) runJob(ctx context.Context, j *layerJob, sem chan struct{}) error {
	held := true
	release := func() {
		if held {
			held = false
			<-sem
		}
	}
	defer release()

	if err := p.fetchAndUnpack(ctx, j, release); err != nil {
		return err
	}
	release()
	close(j.unpackedCh)

	if j.prev != nil {
		select {
		case <-j.prev.recordedCh:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return p.record(ctx, j)
}

// fetchAndUnpack streams j's blob into the LayerUnpacker or, with
// sequential unpacking and a parent not unpacked yet, spools it to tmp/ so
// that its download does not wait, calls release, and unpacks it once the
// parent is.
func (p *puller) fetchAndUnpack(ctx context.Context, j *layerJob, release func()) error {
	if p.s.opts.Unpacker.ParallelUnpack() || j.prev == nil || isClosed(j.prev.unpackedCh) {
		body, err := p.open(ctx, j.desc, "layer")
		if err != nil {
			return err
		}
		defer body.Close()
		blob := newBlobReader(body, j.desc)
		return p.unpack(ctx, j, blob, func() { body.Close() }, blob)
	}
	path, err := p.spool(ctx, j)
	if path != "" {
		defer os.Remove(path)
	}
	if err != nil {
		return err
	}
	release()
	if err := p.waitParentUnpacked(ctx, j); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open spooled layer %s: %w", j.desc.Digest, err)
	}
	defer f.Close()
	return p.unpack(ctx, j, f, func() { f.Close() }, nil)
}

func (p *puller) waitParentUnpacked(ctx context.Context, j *layerJob) error {
	if j.prev == nil || p.s.opts.Unpacker.ParallelUnpack() {
		return nil
	}
	select {
	case <-j.prev.unpackedCh:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// spool downloads j's blob, verified, into a file under tmp/ and returns its
// path ("" when no file was created).
func (p *puller) spool(ctx context.Context, j *layerJob) (string, error) {
	body, err := p.open(ctx, j.desc, "layer")
	if err != nil {
		return "", err
	}
	defer body.Close()
	f, err := os.CreateTemp(p.s.tmpDir(), "spool-")
	if err != nil {
		return "", fmt.Errorf("spool layer %s: %w", j.desc.Digest, err)
	}
	defer f.Close()
	blob := newBlobReader(body, j.desc)
	buf := make([]byte, bufSize)
	// The struct hides File.ReadFrom, whose fallback copies in 32 KiB steps.
	if _, err := io.CopyBuffer(struct{ io.Writer }{f}, blob, buf); err != nil {
		if blob.err != nil {
			return f.Name(), blob.err
		}
		return f.Name(), fmt.Errorf("spool layer %s: %w", j.desc.Digest, err)
	}
	return f.Name(), blob.verify()
}

// unpack streams src (j's compressed blob, read through the verifying
// blob reader when it is not nil) into the LayerUnpacker: a readahead
// goroutine decompresses it (and digests it, if blob is set), the caller's
// goroutine digests the uncompressed stream and runs Unpack, so that the
// two halves use two cores. closeSrc unblocks a read of src in progress.
// After Unpack it verifies the diff-id; a mismatch leaves the snapshot for
// abort to remove (j.unpacked is set).
func (p *puller) unpack(ctx context.Context, j *layerJob, src io.Reader, closeSrc func(), blob *blobReader) error {
	s := p.s
	lr := &layerReader{src: src, blob: blob, comp: j.comp, desc: j.desc, gzipCommand: s.opts.GzipCommand}
	ra := newReadahead(lr, lr.close, closeSrc)
	defer ra.Close()
	d := &diffReader{r: ra, max: s.opts.MaxLayerSize, desc: j.desc}
	if j.comp != compressionNone { // else the blob's digest is the diff-id, checked by fetchConfig
		d.h = j.diffID.Algorithm().Hash()
	}

	size, err := s.opts.Unpacker.Unpack(ctx, j.cacheID, j.parentCacheID, d)
	if err != nil {
		if d.err != nil {
			return d.err
		}
		return fmt.Errorf("unpack layer %s: %w", j.desc.Digest, err)
	}
	j.unpacked, j.size = true, size
	// The unpacker may stop at the tar end-of-archive marker: digest the
	// rest. Reaching the end also checks the compressed digest and size.
	if _, err := io.Copy(io.Discard, d); err != nil {
		return err
	}
	if d.h == nil {
		return nil
	}
	if got := digest.NewDigest(j.diffID.Algorithm(), d.h); got != j.diffID {
		return fmt.Errorf("layer %s: diff-id mismatch: got %s, want %s: %w", j.desc.Digest, got, j.diffID, errdefs.ErrDataLoss)
	}
	return nil
}

// layerReader is the source half of a layer stream: it decompresses src
// and, once the compressed stream ends, reads what follows it and checks
// the blob's size and digest. Its errors are classified.
type layerReader struct {
	src  io.Reader
	blob *blobReader // nil when src was verified before (a spooled layer)
	comp compression
	desc ocispec.Descriptor
	br   *bufio.Reader
	dec  io.ReadCloser
	// gzipCommand inflates gzip in an external process when set.
	gzipCommand []string
}

func (l *layerReader) Read(p []byte) (int, error) {
	if l.dec == nil {
		if l.comp == compressionNone {
			l.dec = nopReadCloser{l.src} // the readahead chunks are buffer enough
		} else {
			l.br = bufio.NewReaderSize(l.src, bufSize)
			dec, err := newDecompressor(l.comp, l.br, l.gzipCommand)
			if err != nil {
				return 0, l.classify(err)
			}
			l.dec = dec
		}
	}
	n, err := l.dec.Read(p)
	switch {
	case err == io.EOF:
		// Read what follows the compressed stream (uncompressed, the
		// source itself has ended).
		if l.br != nil {
			if _, err := io.Copy(io.Discard, l.br); err != nil {
				return n, l.classify(err)
			}
		}
		if l.blob != nil {
			if err := l.blob.verify(); err != nil {
				return n, err
			}
		}
		return n, io.EOF
	case err != nil:
		return n, l.classify(err)
	}
	return n, nil
}

// classify prefers what the blob reader saw (a digest or size mismatch, a
// stall, a network error) over what the decompressor made of it;
// undecodable data is a corrupt blob.
func (l *layerReader) classify(err error) error {
	if l.blob != nil && l.blob.err != nil {
		return l.blob.err
	}
	var se *stallError
	if errors.As(err, &se) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("decompress layer %s: %v: %w", l.desc.Digest, err, errdefs.ErrDataLoss)
}

func (l *layerReader) close() {
	if l.dec != nil {
		l.dec.Close()
	}
}

type nopReadCloser struct{ io.Reader }

func (nopReadCloser) Close() error { return nil }

type zstdReadCloser struct{ *zstd.Decoder }

func (z zstdReadCloser) Close() error { z.Decoder.Close(); return nil }

func newDecompressor(c compression, r *bufio.Reader, gzipCommand []string) (io.ReadCloser, error) {
	switch c {
	case compressionGzip:
		if len(gzipCommand) > 0 && !startsWithStoredBlock(r) {
			return newExternalDecompressor(gzipCommand, r)
		}
		return gzip.NewReader(r)
	case compressionZstd:
		// Synchronous decoding: the readahead goroutine is the pipeline
		// stage, and the decoder must be done with r when Read returns.
		z, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		return zstdReadCloser{z}, nil
	default:
		return nil, fmt.Errorf("no decompressor for compression %d", c)
	}
}

// Readahead geometry: the producer runs up to raChunks chunks ahead.
const (
	raChunks    = 4
	raChunkSize = 256 << 10
)

// readahead reads r on its own goroutine into a few chunks ahead of its
// consumer. Read must not be called after Close.
type readahead struct {
	full     chan *chunk
	free     chan *chunk
	done     chan struct{}
	closeSrc func()
	wg       sync.WaitGroup
	once     sync.Once
	cur      *chunk // the consumer's
}

type chunk struct {
	buf    []byte
	off, n int
	err    error // after buf[:n]
}

// newReadahead starts reading r; onExit runs on the reading goroutine when
// it stops.
func newReadahead(r io.Reader, onExit, closeSrc func()) *readahead {
	ra := &readahead{
		full:     make(chan *chunk, raChunks),
		free:     make(chan *chunk, raChunks),
		done:     make(chan struct{}),
		closeSrc: closeSrc,
	}
	for i := 0; i < raChunks; i++ {
		ra.free <- &chunk{buf: make([]byte, raChunkSize)}
	}
	ra.wg.Add(1)
	go ra.run(r, onExit)
	return ra
}

func (ra *readahead) run(r io.Reader, onExit func()) {
	defer ra.wg.Done()
	defer onExit()
	for {
		var c *chunk
		select {
		case c = <-ra.free:
		case <-ra.done:
			return
		}
		c.off = 0
		c.n, c.err = io.ReadFull(r, c.buf)
		if c.err == io.ErrUnexpectedEOF {
			c.err = io.EOF
		}
		select {
		case ra.full <- c:
		case <-ra.done:
			return
		}
		if c.err != nil {
			return
		}
	}
}

func (ra *readahead) Read(p []byte) (int, error) {
	for ra.cur == nil || ra.cur.off == ra.cur.n {
		if ra.cur != nil {
			if ra.cur.err != nil {
				return 0, ra.cur.err
			}
			ra.free <- ra.cur // never blocks: free holds every chunk
		}
		// The producer sends every chunk it fills, the last one with its
		// error, so this receive always ends.
		ra.cur = <-ra.full
	}
	n := copy(p, ra.cur.buf[ra.cur.off:ra.cur.n])
	ra.cur.off += n
	return n, nil
}

// Close stops the reading goroutine, closing the source to unblock a read
// in progress, and waits for it.
func (ra *readahead) Close() {
	ra.once.Do(func() {
		close(ra.done)
		ra.closeSrc()
		ra.wg.Wait()
	})
}

// blobReader verifies a compressed blob as it streams: it never reads past
// the descriptor's size, and at EOF checks the size and the digest.
type blobReader struct {
	r    io.Reader
	desc ocispec.Descriptor
	h    hash.Hash
	n    int64
	err  error // the first error, returned by every later Read
}

func newBlobReader(r io.Reader, desc ocispec.Descriptor) *blobReader {
	return &blobReader{r: r, desc: desc, h: desc.Digest.Algorithm().Hash()}
}

func (b *blobReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	// One byte more than the size may be read, to see an overlong blob.
	if rest := b.desc.Size - b.n + 1; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := b.r.Read(p)
	if b.n+int64(n) > b.desc.Size {
		b.err = fmt.Errorf("layer %s: more than the %d bytes its descriptor says: %w", b.desc.Digest, b.desc.Size, errdefs.ErrDataLoss)
		return 0, b.err
	}
	b.n += int64(n)
	b.h.Write(p[:n])
	switch {
	case err == io.EOF:
		if verr := b.verify(); verr != nil {
			return n, verr
		}
	case err != nil:
		b.err = readErr("layer", b.desc.Digest, err)
		return n, b.err
	}
	return n, err
}

// verify checks size and digest once the blob has been read to its end.
func (b *blobReader) verify() error {
	if b.err != nil {
		return b.err
	}
	if b.n != b.desc.Size {
		b.err = fmt.Errorf("layer %s: truncated: got %d of %d bytes: %w", b.desc.Digest, b.n, b.desc.Size, errdefs.ErrDataLoss)
		return b.err
	}
	if got := digest.NewDigest(b.desc.Digest.Algorithm(), b.h); got != b.desc.Digest {
		b.err = fmt.Errorf("layer: digest mismatch: got %s, want %s: %w", got, b.desc.Digest, errdefs.ErrDataLoss)
	}
	return b.err
}

// diffReader digests the uncompressed stream (unless h is nil) and
// enforces the size cap.
type diffReader struct {
	r    io.Reader
	h    hash.Hash
	n    int64
	max  int64
	desc ocispec.Descriptor
	err  error
}

func (d *diffReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	n, err := d.r.Read(p)
	d.n += int64(n)
	if d.n > d.max {
		d.err = fmt.Errorf("layer %s: uncompressed size exceeds the limit of %d bytes: %w", d.desc.Digest, d.max, errdefs.ErrResourceExhausted)
		return 0, d.err
	}
	if d.h != nil {
		d.h.Write(p[:n])
	}
	if err != nil && err != io.EOF {
		d.err = err // classified by layerReader
	}
	return n, err
}

// record renames j's layerdb entry into place. Its parent, if this pull
// creates it, is recorded already, so layerdb never holds a layer without
// its parent.
func (p *puller) record(ctx context.Context, j *layerJob) error {
	s := p.s
	l := Layer{ChainID: j.chainID, DiffID: j.diffID, Parent: j.parent, Size: j.size, CacheID: j.cacheID}
	dir, err := s.stageLayer(l)
	if err != nil {
		return fmt.Errorf("record layer %s: %w", j.chainID, err)
	}
	defer os.RemoveAll(dir) // gone after the rename
	s.mu.Lock()
	err = s.installLayerLocked(ctx, dir, l)
	if err == nil {
		s.layers[l.ChainID] = &layerRecord{Layer: l, holds: 1}
		delete(s.inflight, l.CacheID)
		j.recorded = true
	}
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("record layer %s: %w", j.chainID, err)
	}
	// Make the rename durable before a child's, then let others build on it.
	err = atomicfile.SyncDir(filepath.Dir(s.layerDir(l.ChainID)))
	s.chains.unlock(j.chainID)
	j.locked = false
	if err != nil {
		return fmt.Errorf("record layer %s: %w", j.chainID, err)
	}
	if err := s.installFile(s.diffIDPath(j.desc.Digest), []byte(j.diffID.String())); err != nil {
		log.G(ctx).Warn("recording diff-id of blob failed", "blob", j.desc.Digest, "error", err)
	}
	close(j.recordedCh)
	return nil
}

// installLayerLocked renames a staged layer directory into layerdb,
// replacing a stale entry that recovery could not remove.
// Precondition: s.mu held.
func (s *Store) installLayerLocked(ctx context.Context, staged string, l Layer) error {
	dst := s.layerDir(l.ChainID)
	err := os.Rename(staged, dst)
	if err != nil && (errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY)) {
		old, derr := s.discard(dst)
		if derr != nil {
			return fmt.Errorf("replace stale layer: %w", derr)
		}
		if rerr := os.RemoveAll(old); rerr != nil {
			log.G(ctx).Warn("removing stale layer entry failed", "path", old, "error", rerr)
		}
		err = os.Rename(staged, dst)
	}
	return err
}
