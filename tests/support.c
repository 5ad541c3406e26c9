/* Anchors the test support library; the helpers live in support/. */
int omnisync_testsupport_anchor(void);
int omnisync_testsupport_anchor(void)
{
    return 0;
}
