/*
 * queue: one intrusive doubly linked circular list, after libuv's queue.h.
 *
 * A `struct queue` is embedded in each element and one more serves as the head; an empty head
 * points at itself, so insertion and removal never branch on "first" or "last". The list owns
 * nothing: elements are allocated and freed by their module, and an element must be removed
 * before it is freed. A head or an element that is in a list must not be moved in memory (its
 * neighbours point at it): init the head in place, in the owning struct's init.
 *
 * Use queue_data() to get from a node back to its element:
 *     struct queue *q = queue_head(&d->ready);
 *     struct delivery *dl = queue_data(q, struct delivery, node);
 */
#ifndef OMNISYNC_QUEUE_H
#define OMNISYNC_QUEUE_H

#include <stddef.h>

struct queue {
    struct queue *next;
    struct queue *prev;
};

#define queue_data(ptr, type, field) ((type *)((char *)(ptr)-offsetof(type, field)))

/* Walks `h`; the body must not remove `q` (use queue_head() in a loop for that). */
#define queue_foreach(q, h) for ((q) = (h)->next; (q) != (h); (q) = (q)->next)

static inline void queue_init(struct queue *h)
{
    h->next = h;
    h->prev = h;
}

static inline int queue_empty(const struct queue *h)
{
    return h->next == h;
}

/* The first element, or NULL when empty. */
static inline struct queue *queue_head(const struct queue *h)
{
    return queue_empty(h) ? NULL : h->next;
}

static inline void queue_insert_tail(struct queue *h, struct queue *q)
{
    q->next = h;
    q->prev = h->prev;
    q->prev->next = q;
    h->prev = q;
}

static inline void queue_insert_head(struct queue *h, struct queue *q)
{
    q->next = h->next;
    q->prev = h;
    q->next->prev = q;
    h->next = q;
}

/* Takes `q` out of its list; `q` is left pointing at itself (safe to remove again). */
static inline void queue_remove(struct queue *q)
{
    q->prev->next = q->next;
    q->next->prev = q->prev;
    q->next = q;
    q->prev = q;
}

/* Removes and returns the first element, or NULL when empty. */
static inline struct queue *queue_pop(struct queue *h)
{
    struct queue *q = queue_head(h);
    if (q != NULL)
        queue_remove(q);
    return q;
}

/* Moves every element of `from` to the tail of `to`, in order; `from` is left empty. */
static inline void queue_append(struct queue *to, struct queue *from)
{
    if (queue_empty(from))
        return;
    to->prev->next = from->next;
    from->next->prev = to->prev;
    to->prev = from->prev;
    from->prev->next = to;
    queue_init(from);
}

#endif
