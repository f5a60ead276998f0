/* certwatch: stat()-based polling (see certwatch.h). inotify on Let's
 * Encrypt's symlinks and their targets is fragile, and a stat every poll
 * costs nothing. */
#include <config.h> /* the build's (_GNU_SOURCE), not core/config.h beside this file */

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/certwatch.h"

struct certwatch_sig {
	int err;
	dev_t dev;
	ino_t ino, link_ino;
	off_t size;
	struct timespec mtime, ctime, link_mtime;
};

struct certwatch_file {
	char *path;
	struct certwatch_sig loaded; /* as when the snapshot was built */
	struct certwatch_sig seen;   /* at the previous poll */
};

struct certwatch {
	struct certwatch_file *files;
	size_t nfiles;
};

static void certwatch_sig_get(const char *path, struct certwatch_sig *s)
{
	struct stat st, lst;
	memset(s, 0, sizeof(*s));
	if (stat(path, &st) < 0) {
		s->err = errno;
		return;
	}
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	s->size = st.st_size;
	s->mtime = st.st_mtim;
	s->ctime = st.st_ctim;
	/* The link itself too: certbot swaps symlinks in live/. */
	if (lstat(path, &lst) == 0) {
		s->link_ino = lst.st_ino;
		s->link_mtime = lst.st_mtim;
	}
}

static bool certwatch_sig_equal(const struct certwatch_sig *a, const struct certwatch_sig *b)
{
	return a->err == b->err && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->link_ino == b->link_ino && a->mtime.tv_sec == b->mtime.tv_sec &&
	       a->mtime.tv_nsec == b->mtime.tv_nsec && a->ctime.tv_sec == b->ctime.tv_sec &&
	       a->ctime.tv_nsec == b->ctime.tv_nsec &&
	       a->link_mtime.tv_sec == b->link_mtime.tv_sec &&
	       a->link_mtime.tv_nsec == b->link_mtime.tv_nsec;
}

static void certwatch_add(struct certwatch *cw, const char *path)
{
	if (path == NULL)
		return;
	cw->files = xrealloc(cw->files, (cw->nfiles + 1) * sizeof(*cw->files));
	struct certwatch_file *f = &cw->files[cw->nfiles++];
	f->path = xstrdup(path);
	certwatch_sig_get(path, &f->loaded);
	f->seen = f->loaded;
}

struct certwatch *certwatch_new(const struct config *cfg)
{
	struct certwatch *cw = xcalloc(1, sizeof(*cw));
	for (size_t i = 0; i < cfg->ntls_cert_files; i++)
		certwatch_add(cw, cfg->tls_cert_files[i]);
	for (size_t i = 0; i < cfg->ntls_key_files; i++)
		certwatch_add(cw, cfg->tls_key_files[i]);
	for (size_t i = 0; i < cfg->ntls_sni; i++) {
		certwatch_add(cw, cfg->tls_sni[i].cert_file);
		certwatch_add(cw, cfg->tls_sni[i].key_file);
	}
	return cw;
}

void certwatch_free(struct certwatch **cw)
{
	if (*cw == NULL)
		return;
	for (size_t i = 0; i < (*cw)->nfiles; i++)
		free((*cw)->files[i].path);
	free((*cw)->files);
	free(*cw);
	*cw = NULL;
}

bool certwatch_empty(const struct certwatch *cw)
{
	return cw->nfiles == 0;
}

const char *certwatch_poll(struct certwatch *cw)
{
	bool changed = false, settled = true;
	const char *which = NULL;
	for (size_t i = 0; i < cw->nfiles; i++) {
		struct certwatch_file *f = &cw->files[i];
		struct certwatch_sig now;
		certwatch_sig_get(f->path, &now);
		if (!certwatch_sig_equal(&now, &f->loaded)) {
			changed = true;
			if (which == NULL)
				which = f->path;
		}
		if (!certwatch_sig_equal(&now, &f->seen))
			settled = false;
		f->seen = now;
	}
	return changed && settled ? which : NULL;
}

void certwatch_refused(struct certwatch *cw, const struct certwatch *attempt)
{
	for (size_t i = 0; i < cw->nfiles; i++) {
		struct certwatch_file *f = &cw->files[i];
		bool found = false;
		for (size_t k = 0; attempt != NULL && k < attempt->nfiles && !found; k++)
			if (strcmp(attempt->files[k].path, f->path) == 0) {
				f->loaded = f->seen = attempt->files[k].loaded;
				found = true;
			}
		if (!found) {
			certwatch_sig_get(f->path, &f->loaded);
			f->seen = f->loaded;
		}
	}
}

const char *certwatch_unreadable(const struct certwatch *cw, int *err_r)
{
	for (size_t i = 0; cw != NULL && i < cw->nfiles; i++) {
		/* O_NONBLOCK: a named pipe must not stall the start */
		int fd = open(cw->files[i].path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
		if (fd < 0) {
			*err_r = errno;
			return cw->files[i].path;
		}
		close(fd);
	}
	return NULL;
}
